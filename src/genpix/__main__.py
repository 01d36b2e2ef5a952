from genpix.cli import main

raise SystemExit(main())
