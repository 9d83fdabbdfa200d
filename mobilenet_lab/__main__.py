"""usage: python -m mobilenet_lab COMMAND [--help | ARGUMENTS]: the tools and experiments by short names.

    train    train with a checkpoint per epoch; --resume       prepare  build a dataset in the assignment's layout
    predict  classify pictures of digits                      explain  parameters, FLOPs, Grad-CAM and feature maps
    demo     the draw-a-digit page                            submit   build and check the submission zip
    report   the experiments and Report.pdf                   bench    speed, time to accuracy, memory"""
import importlib
import sys

COMMANDS = {"train": "tools.train", "prepare": "tools.prepare", "predict": "tools.predict",
            "explain": "tools.explain", "demo": "tools.demo", "submit": "tools.submit", "report": "experiments.report",
            "bench": "experiments.bench"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if len(sys.argv) >= 2 else sys.stderr)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    if sys.argv[1] not in COMMANDS:
        print(f"error: unknown command {sys.argv[1]!r}: choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(importlib.import_module(f".{COMMANDS[sys.argv[1]]}", __package__).main(sys.argv[2:]))
