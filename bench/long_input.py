"""Memory and time bound for a very long upload: peak RSS and wall time of MVNet.embed on a 30-minute file.

    python bench/long_input.py [--minutes 30] [--rate 44100] [--channels 2] [--weights weights]

mvnet.audio decodes at most MAX_SECONDS (600 s) and reads in 30 s blocks, downmixing each, so memory grows with
the cap, not with the file. Writes the file to a temporary folder (a 30-min 44.1 kHz stereo WAV is ~320 MB), then
measures, in fresh processes, (1) the baseline after imports and model load, (2) one embed of a 10 s clip and
(3) one embed of the long file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import json, resource, sys, time
from mvnet.pipeline import MVNet
model = MVNet.from_pretrained(sys.argv[2], device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
if sys.argv[1] != "-":
    emb = model.embed(sys.argv[1])
    info = {"decoded_seconds": emb.duration_seconds, "windows": len(emb.starts_seconds)}
else:
    info = {}
print(json.dumps({"baseline_mb": base, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - started, **info}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--weights", default=str(ROOT / "weights"))
    args = parser.parse_args()
    import numpy as np
    import soundfile as sf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.wav"
        with sf.SoundFile(path, "w", args.rate, args.channels, subtype="PCM_16") as handle:
            t = np.arange(60 * args.rate) / args.rate
            minute = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
            minute = np.repeat(minute[:, None], args.channels, axis=1).astype(np.float32)
            for _ in range(int(args.minutes)):
                handle.write(minute)
        size_mb = path.stat().st_size / 1e6
        short = Path(folder) / "short.wav"
        sf.write(short, minute[: 10 * args.rate], args.rate, subtype="PCM_16")
        results = {}
        for name, source in (("imports + model only", "-"), ("embed a 10 s clip", str(short)),
                             ("embed the file", str(path))):
            done = subprocess.run([sys.executable, "-c", MEASURE, source, args.weights], cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    embed = results["embed the file"]
    print(f"{args.minutes:.0f}-minute {args.rate} Hz {args.channels}-channel PCM_16 WAV ({size_mb:.0f} MB): "
          f"decoded {embed['decoded_seconds']:.0f} s, {embed['windows']} windows; embed took {embed['seconds']:.2f} s; "
          f"peak RSS {embed['peak_mb']:.0f} MB; {results['embed a 10 s clip']['peak_mb']:.0f} MB for a 10 s clip "
          f"({results['embed a 10 s clip']['seconds']:.2f} s), {results['imports + model only']['peak_mb']:.0f} MB "
          "after imports and model load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
