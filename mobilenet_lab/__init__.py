"""mobilenet_lab: MNIST classification with MobileNet v1 depthwise-separable blocks.

The assignment's parts, in its order: the data loader (data.MnistCsvDataset, data.load_splits, data.data_loader), the
blocks and networks (model.ConvDw, model.init_network), training (training.train), saving and loading
(checkpoint.save, checkpoint.load), testing (evaluation.test), the figures (figures.visualize); the helpers they use
(config, reading, augment, losses, metrics, files, sample, runs, errors). The experiments behind Report.pdf live in
``experiments/``, the tools in ``tools/``; neither is imported by these modules."""
__version__ = "0.3.0"
