"""A thread-pool crawler: fetch_page() N pages from a local (slow) server."""

import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

port, pages, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def fetch_page(i):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/page/{i}", timeout=30) as r:
        return len(r.read())


with ThreadPoolExecutor(workers, thread_name_prefix="crawler") as pool:
    total = sum(pool.map(fetch_page, range(pages)))
print(total)
