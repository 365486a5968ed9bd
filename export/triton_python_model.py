"""Triton Python-backend model: runs the exported ONNX graph with ONNX Runtime (CPU).

`python -m export.triton --platform python` copies this file to `REPO/NAME/1/model.py` beside `model.onnx`.
It runs inside Triton's Python-backend stub, in the server's environment (numpy<2 + onnxruntime, see
`python -m runtime.triton_server --setup`), so it imports nothing of this repository. With dynamic
batching Triton hands `execute` several requests at once; they are concatenated and run as one batch,
then split back per request. Model parameters (config.pbtxt): `onnx_file`, `intra_op_threads`,
`allow_spinning` ("0" or "1").
"""
import json
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime

        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        model_file = Path(args["model_repository"]) / args["model_version"] / params.get("onnx_file", "model.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        # Idle ONNX Runtime threads spin by default; beside the server's own threads that costs throughput
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        import numpy as np
        import triton_python_backend_utils as pb_utils

        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                 for name in self.input_names}
        sizes = [len(array) for array in feeds[self.input_names[0]]]
        try:
            outputs = self.session.run(self.output_names, {name: np.concatenate(parts) for name, parts in feeds.items()})
        except Exception as err:  # one error answer per request, the server keeps running
            error = pb_utils.TritonError(f"onnxruntime failed: {err}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        bounds = np.cumsum([0] + sizes)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop]))
                                            for name, out in zip(self.output_names, outputs)])
                for start, stop in zip(bounds[:-1], bounds[1:])]

    def finalize(self):
        self.session = None
