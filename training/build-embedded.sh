#!/usr/bin/env bash
# Rebuild the embedded models of mame_eval/assets from nothing but this repository, on a CPU:
# phantoms -> prepare -> autoencoder -> MAM-E-tiny -> MAM-E-tiny-inpaint, and MammoNet-tiny on
# phantoms of another seed; then copy the three models (fp16 weights) into mame_eval/assets.
# Every step resumes when rerun (phantoms and prepared images are kept, training continues
# from its newest checkpoint). About an hour on 2 CPU cores.
#
#   bash training/build-embedded.sh            # build into runs/embedded/, then install
#   bash training/build-embedded.sh --no-install
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
ME=${MAME_EVAL:-.venv/bin/mame-eval}
RUN=runs/embedded

[ -f $RUN/phantoms/breast-level_annotations.csv ] ||
  $ME phantoms $RUN/phantoms --n 1600 --size 320x256 --seed 0 --lesion-fraction 0.4 --population mixed
$ME prepare $RUN/phantoms $RUN/prepared --size 128 --family fusion --workers 2
[ -f $RUN/phantoms-cad/breast-level_annotations.csv ] ||
  $ME phantoms $RUN/phantoms-cad --n 1600 --size 320x256 --seed 1 --lesion-fraction 0.5 --population mixed
$ME prepare $RUN/phantoms-cad $RUN/prepared-cad --size 128 --family fusion --workers 2

[ -f $RUN/vae/config.json ] || $ME train vae training/tiny-vae.toml
[ -f $RUN/mame-tiny/model_index.json ] || $ME train healthy training/tiny-healthy.toml
[ -f $RUN/mammonet-tiny/config.json ] || $ME train cad training/cad-tiny.toml
[ -f $RUN/mame-tiny-inpaint/model_index.json ] || $ME train inpaint training/tiny-inpaint.toml
# (training/tiny-inpaint-masks.toml, stage 2 with mask shape/size augmentation, is not part of
# the build: its first run lowered MammoNet-tiny's lesion-score rise; see that file.)

if [ "${1:-}" != "--no-install" ]; then
  .venv/bin/python -m mame_eval.models.assets install \
    --txt2img $RUN/mame-tiny --inpaint $RUN/mame-tiny-inpaint --cad $RUN/mammonet-tiny
fi
