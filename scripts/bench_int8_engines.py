"""ONNX Runtime and OpenVINO in f32 and int8 on this project's ONNX export, at 224x224, beside
`cargo xtask bench-int8 --speed` (BENCHMARKS.md, "Int8 beside the deployment engines").

ORT int8 comes from quantize_static (QDQ, per-channel s8 weights, u8 activations, min-max on 32
random images), OpenVINO int8 from NNCF's quantize on the same images. Two threads everywhere;
images/s as the median of ROUNDS rounds of RUNS timed runs after one warm-up.

    repvgg convert --input a0.safetensors --arch A0 --output DIR/a0.onnx   # any weights: speed does not depend on them
    .venv/bin/pip install onnxruntime openvino nncf onnx
    .venv/bin/python scripts/bench_int8_engines.py DIR a0 b0
"""
import statistics, sys, time
import numpy as np
import onnxruntime as ort
import openvino as ov
import nncf
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

ROUNDS, RUNS = 5, 3
rng = np.random.default_rng(0)
calibration = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(32)]


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(calibration)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"images": x}


def rate(run, batch):
    run()
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(RUNS):
            run()
        times.append((time.perf_counter() - start) / RUNS)
    return batch / statistics.median(times)


def ort_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


core = ov.Core()
print("| model | batch | ORT f32 | ORT int8 | OpenVINO f32 | OpenVINO int8 (default precision) |")
print("|---|---:|---:|---:|---:|---:|")
directory = sys.argv[1]
for name in sys.argv[2:]:
    f32_path = f"{directory}/{name}.onnx"
    int8_path = f"{directory}/{name}-ort-int8.onnx"
    quantize_static(f32_path, int8_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    sessions = {"f32": ort_session(f32_path), "int8": ort_session(int8_path)}
    ov_f32 = core.read_model(f32_path)
    ov_int8 = nncf.quantize(core.read_model(f32_path), nncf.Dataset(calibration, lambda x: x),
                            subset_size=len(calibration))
    for batch in (1, 8):
        images = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        rates = []
        for kind in ("f32", "int8"):
            session = sessions[kind]
            rates.append(rate(lambda: session.run(None, {"images": images}), batch))
        for model, precision in ((ov_f32, "f32"), (ov_int8, None)):
            model.reshape({"images": [batch, 3, 224, 224]})
            config = {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"}
            if precision:
                config["INFERENCE_PRECISION_HINT"] = precision
            compiled = core.compile_model(model, "CPU", config)
            request = compiled.create_infer_request()
            rates.append(rate(lambda: request.infer({"images": images}), batch))
        print(f"| {name.upper()} | {batch} | " + " | ".join(f"{r:.1f}" for r in rates) + " |", flush=True)
