"""Train, validate internally and externally, and export: `python scripts/train.py [overrides]`."""

from medimg.pipeline.entry import train_main

if __name__ == "__main__":
    train_main()
