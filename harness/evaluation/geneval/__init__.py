"""GenEval (Ghosh, Hajishirzi & Schmidt, NeurIPS 2023): object-focused text-to-image alignment.

Six tasks over the 80 COCO classes (single object, two objects, counting, colours, position, colour
attribution), 4 images per prompt, judged by a COCO instance-segmentation detector plus CLIP
zero-shot colour classification of each object's masked crop; the score is the mean of the six task
accuracies.

- ``prompts``: the prompt metadata, generated from GenEval's templates (seed 43 reproduces the
  published 553-prompt set) and the sample-folder layout generators write into.
- ``scoring``: the rules (thresholds 0.3 / 0.9 for counting, 16 objects per class, position margin
  0.1, masked crops for colour) and the per-task / overall summary.
- ``backends``: the detector and colour-classifier protocols, their real implementations from
  weights you provide (torchvision Mask R-CNN, open_clip), and the test doubles for synthetic scenes.
- ``scenes``: synthetic scenes with known ground truth that prove the scoring.
"""
