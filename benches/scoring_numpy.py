"""NumPy Dice over the scoring bench's masks (see benches/scoring.rs).

    python scoring_numpy.py DIR N

Reads each pair with nibabel, thresholds at nonzero, and computes Dice as
2|A∩B| / (|A|+|B|) (1.0 when both are empty). Prints one line:
seconds=… peak_kib=… dice=<mean> hd95=nan, the peak being this process's
maximum resident set size (resource.getrusage, KiB on Linux).
"""

import os
import resource
import sys
import time

import nibabel as nib
import numpy as np


def main():
    directory, n = sys.argv[1], int(sys.argv[2])
    started = time.perf_counter()
    total = 0.0
    for i in range(n):
        a = np.asanyarray(nib.load(os.path.join(directory, f"case_{i:04}_truth.nii.gz")).dataobj) != 0
        b = np.asanyarray(nib.load(os.path.join(directory, f"case_{i:04}_pred.nii.gz")).dataobj) != 0
        size = np.count_nonzero(a) + np.count_nonzero(b)
        total += 1.0 if size == 0 else 2.0 * np.count_nonzero(a & b) / size
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"seconds={seconds} peak_kib={peak} dice={total / n} hd95=nan")


if __name__ == "__main__":
    main()
