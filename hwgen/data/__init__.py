"""Time-series datasets: chronological splits, training-only scaling, vectorised windowing."""

from hwgen.data.timeseries import Dataset, Split, load_csv, load_pm25, pm25_csv_path, split_bounds

__all__ = ["Dataset", "Split", "load_csv", "load_pm25", "pm25_csv_path", "split_bounds"]
