"""mobilenet_lab: MNIST classification with MobileNet v1 depthwise-separable blocks.

The assignment's parts, one module each: the settings (config.Config), the dataset (data.MnistCsvDataset,
data.load_splits), the blocks and networks (model.ConvDw, model.init_network), training and testing (training.train,
training.test), saving and loading (checkpoint.save, checkpoint.load), the figures (figures.visualize). The experiments
behind Report.pdf live in ``experiments/``, the viva and submission tools in ``tools/``; neither is imported by these
modules."""
__version__ = "0.2.0"
