"""The default training recipe: the settings the saved models were trained with.

The root script's flags default to these, and the report's main models and the benchmark
train with them. No imports here, so that ``--help`` stays fast.
"""
DEFAULTS = dict(epochs=20, lr=3e-3, batch_size=128, optimizer="adamw", loss="balanced-softmax", balance="none",
                val_size="0.02", seed=0, average_decay=0.999, elastic=1.5, shear=15.0, erase=0.0,
                keep="last")
# The optimizers train() knows (training.make_optimizer), as the report and the benchmark name them.
OPTIMIZER_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD with Nesterov momentum"}
KEEP_CHOICES = ("last", "best")  # train(keep=...) and --keep: the last epoch's weights or the best validation epoch's
# How train() picks the epoch whose weights it returns (the report refuses stored runs picked otherwise).
BEST_EPOCH_RULE = (f"weights of the {DEFAULTS['keep']} epoch kept; best validation epoch: highest accuracy, "
                   f"latest among equals")
