"""Write docs/reliability.md from the corpus and the error lines of a real run.

    DSSEG_CORPUS_DUMP=/tmp/corpus.json python -m pytest test/test_corpus.py -k malformed
    python test/corpus/reliability_doc.py /tmp/corpus.json docs/reliability.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_cases import CASES  # noqa: E402

HEADER = """# Reliability: malformed inputs and interrupted jobs (issue #7)

Every case below is a malformed input that `test/test_corpus.py` runs through the real CLI
(`python -m dsseg_core ...` in a subprocess, with a timeout). The contract, checked for each:

- exit code != 0 (1 for every `DssegError`);
- stderr has exactly one line `dsseg <command>: error: ...` naming the file / topic / field at
  fault (and usually the fix);
- no Python traceback on stdout or stderr;
- nothing half-written: no `*.tmp*` file left, and the output is absent or complete per the
  command's contract (`frames --out`: `config.yaml` is written last; `train`: a run dir with
  `model.safetensors`; `pseudo-label`: `dataset.yaml` + `index.jsonl`; files like
  `--json`/`.onnx` outputs must not exist).

Inputs: small text files in `test/corpus/` (configs, calibration, a garbage `.onnx`); bags,
datasets and checkpoints are generated in a temporary folder by `test/corpus/corpus_cases.py`.
Run: `python -m pytest test/test_corpus.py test/test_kill_resume.py -q`.
The "documented error" column is the actual line of a run (temporary paths shortened to `…/`),
regenerated with `test/corpus/reliability_doc.py`.

**Status**: `ok` = the contract holds; `BUG` = a known defect, the case is a strict `xfail`
in the suite (it will fail as XPASS once fixed, so the marker gets removed).

## Malformed inputs

| case | group | input | command | documented error / fallback | status |
|---|---|---|---|---|---|
"""

FOOTER = (Path(__file__).resolve().parent / 'reliability_footer.md').read_text('utf-8')


def main() -> None:
    dump = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    rows = []
    for c in CASES:
        got = dump.get(c.id)
        line = ''
        if got is not None:
            root = got['root']
            errs = [ln for ln in got['stderr'].splitlines()
                    if ln.startswith(f'dsseg {c.command}: error:')]
            if errs:
                line = errs[0].replace(root + '/cases/' + c.id + '/', '…/')
                line = line.replace(root + '/shared/', '…/').replace(root, '…')
                line = line.replace(str(Path(__file__).resolve().parent) + '/', 'test/corpus/')
            elif 'Traceback (most recent call last)' in got['stderr']:
                line = 'Python traceback: ' + got['stderr'].strip().splitlines()[-1]
                line = line.replace(root + '/cases/' + c.id + '/', '…/')
            elif got['rc'] == 0:
                line = 'exit 0, no error'
        line = line.replace('|', '\\|') or '(not run)'
        status = f'BUG: {c.xfail}' if c.xfail else 'ok'
        rows.append(f'| `{c.id}` | {c.group} | {c.doc} | `dsseg {c.command}` | {line} | '
                    f'{status} |')
    out.write_text(HEADER + '\n'.join(rows) + '\n' + FOOTER, encoding='utf-8')


if __name__ == '__main__':
    main()
