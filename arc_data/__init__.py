"""ARC tasks in: loading, validation, and the token encoding."""

from arc_data.encoding import CANVAS, EOS, PAD, VOCAB_SIZE, decode_grid, decode_grids, encode_grid
from arc_data.grids import ArcDataError
from arc_data.sources import BUNDLED, load_bundled, load_folder, load_kaggle, load_path, load_source
from arc_data.tasks import Task, task_from_json

__all__ = ["ArcDataError", "BUNDLED", "CANVAS", "EOS", "PAD", "Task", "VOCAB_SIZE", "decode_grid",
           "decode_grids", "encode_grid", "load_bundled", "load_folder", "load_kaggle", "load_path", "load_source",
           "task_from_json"]
