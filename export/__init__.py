"""export: PyTorch model -> unrolled ONNX (-> precision ONNX -> TensorRT engine), with a manifest."""


class ExportError(RuntimeError):
    """An export that cannot proceed; the message says what was received and how to fix it."""
