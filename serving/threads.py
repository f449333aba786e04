"""Thread settings of the request path."""

from __future__ import annotations


def search_threads(n: int) -> None:
    """FAISS (OpenMP) threads for searches made by the calling thread.

    One query per request gains nothing from OpenMP, and its spinning threads slow every other request on a
    small machine. OpenMP keeps this setting per thread, so each worker thread that searches must set it.
    """
    import faiss

    faiss.omp_set_num_threads(n)
