"""Train a zoo model on Fashion-MNIST and save it with its record and curves.

    python -m kbnn.train bnn_mlp --hidden 1024 --binarization deterministic \\
        --epochs 30 --data-dir ../shared/data/fashion_mnist --out runs/bnn_mlp_1024_det

writes NAME.keras (the model), NAME.json (configuration, test accuracy, per-epoch
loss / accuracy / validation accuracy / seconds, peak memory) and NAME.png (learning
curves). The last `--validation-size` training images are held out; the epoch with
the best validation accuracy is kept (model selection never sees the test split),
and the test split is scored once, at the end.

The same from Python:

    from kbnn.train import train_and_save

    record = train_and_save("bnn_mlp", {"hidden_units": (128,)}, "runs/bnn_mlp_128",
                            epochs=2, data_dir="../shared/data/fashion_mnist")

Modules: `fit` (`fit_model`, the training loop alone), `callbacks`, `strategy`
(tf.distribute and which process writes), `multi_worker` (the loop that trains on
several machines, where Keras' `fit` cannot), `settings` (the checked training
settings), `record` (the JSON record and the curves), `run` (`train_and_save`)
and `cli` (the command line).
"""

from kbnn.train.callbacks import EpochTimer, KeepBest, StopOnNaN
from kbnn.train.cli import main
from kbnn.train.fit import TrainingDiverged, TrainingError, augment, fit_model
from kbnn.train.record import peak_memory_mb, replot
from kbnn.train.run import train_and_save
from kbnn.train.settings import SettingError, Settings

__all__ = ["EpochTimer", "KeepBest", "SettingError", "Settings", "StopOnNaN",
           "TrainingDiverged", "TrainingError", "augment", "fit_model", "main",
           "peak_memory_mb", "replot", "train_and_save"]
