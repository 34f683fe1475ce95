#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds: torch-written fixtures (not the 40 MB recipe.pt), the
# hand-made bad, attack and differential inputs, and (for the pickle target) their .pkl records.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/zip corpus/open corpus/walk corpus/pickle corpus/legacy corpus/load corpus/spec corpus/cli \
  corpus/safetensors
for f in ../tests/fixtures/*.pt ../tests/data/bad/*.pt ../tests/data/attacks/*.pt \
         ../tests/data/differential/*.pt ../tests/data/zip/*.pt; do
  b=$(basename "$f")
  [ "$b" = recipe.pt ] && continue
  for t in zip open walk load legacy; do cp "$f" "corpus/$t/$(basename "$(dirname "$f")")-$b"; done
  # cli: an options byte first (3: ls --json --hash, then the table; an assign load).
  { printf '\003'; cat "$f"; } > "corpus/cli/$(basename "$(dirname "$f")")-$b"
done
# safetensors: the package-written fixtures and the hand-made hostile headers.
for f in ../tests/fixtures/safetensors/*.safetensors ../tests/fixtures/safetensors/sharded/*.safetensors \
         ../tests/data/bad/*.safetensors; do
  for t in safetensors open walk; do cp "$f" "corpus/$t/$(basename "$(dirname "$f")")-$(basename "$f")"; done
done
python3 - <<'PY'
import glob, os, zipfile
for f in glob.glob('../tests/fixtures/*.pt') + glob.glob('../tests/data/*/*.pt'):
    if f.endswith('recipe.pt'):
        continue
    stem = os.path.basename(os.path.dirname(f)) + '-' + os.path.basename(f)
    try:
        z = zipfile.ZipFile(f)
        for n in z.namelist():
            if n.endswith('.pkl'):
                with open(f'corpus/pickle/{stem}.{n.replace("/", "_")}', 'wb') as out:
                    out.write(z.read(n))
    except (zipfile.BadZipFile, OSError, NotImplementedError):
        with open(f'corpus/pickle/{stem}', 'wb') as out:
            out.write(open(f, 'rb').read())
PY
ls corpus/*/ | wc -l
# Module specs: every committed spec-fidelity case, and the recipe's spec.
python3 - <<'PY'
import json
for i, case in enumerate(json.load(open('../tests/fixtures/specs.json'))):
    with open(f'corpus/spec/case{i}.json', 'w') as out:
        out.write(case['spec_text'])
PY
cp ../tests/fixtures/recipe.spec.json corpus/spec/
