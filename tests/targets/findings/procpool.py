"""A process pool of WORKERS processes running crunch(), pure-Python CPU work."""

import sys
from concurrent.futures import ProcessPoolExecutor

workers, tasks, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def crunch(n):
    x = 0
    for i in range(n):
        x = (x + i * i) % 1_000_003
    return x


if __name__ == "__main__":
    with ProcessPoolExecutor(workers) as pool:
        print(sum(pool.map(crunch, [size] * tasks)))
