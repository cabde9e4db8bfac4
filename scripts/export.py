"""Export a finished run again, e.g. in another format: `python scripts/export.py RUN_DIR [--format onnx]`."""

from medimg.pipeline.export import export_main

if __name__ == "__main__":
    export_main()
