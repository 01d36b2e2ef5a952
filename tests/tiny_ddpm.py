"""`genpix train ddpm` arguments that train in seconds: 8x8 digits, a two-level U-Net of 8 channels."""

TINY_DDPM = ["--data", "digits", "--image-size", "8", "--limit", "64", "--batch-size", "8", "--base-channels", "8",
             "--channel-mult", "1,2", "--attention-levels", "1", "--quiet", "--device", "cpu", "--sample-every", "100"]
