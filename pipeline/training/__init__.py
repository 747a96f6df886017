"""Training, export and evaluation of defect classifiers (imports paddle).

Exports use the legacy program format (.pdmodel + .pdiparams) so that both
paddlepaddle-gpu 2.6 and paddle 3.x load them; the flag must be set before
paddle is first imported.
"""

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

ARCHITECTURES = (
    "PPLCNet_x0_25",
    "PPLCNet_x0_5",
    "PPLCNet_x1_0",
    "MobileNetV3_small",
    "EfficientNetLite0",
    "EfficientNetLite0_s5",
    "EfficientNetLite0_s4",
)
LITE_ARCHITECTURES = ARCHITECTURES[4:]  # pretrained EfficientNet-Lite0 trunk + a trained head
