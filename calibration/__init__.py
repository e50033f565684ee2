"""INT8 calibration of exported SAN models: explicit Q/DQ quantization with a float mask
path (:mod:`calibration.quantize`), calibration-set hygiene (:mod:`calibration.hygiene`),
mask-threshold calibration (:mod:`calibration.threshold`), the fp32-vs-INT8 report
(:mod:`calibration.report`) and the ``san-calibrate`` command (:mod:`calibration.cli`).
"""
