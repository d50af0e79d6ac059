"""One step of our training loop from given weights: what the distribution and XLA tests compare."""

import keras

from mobilenet_tf import train
from mobilenet_tf.data import pipeline


def one_step_loop(strategy, cfg, info, initial, jit_compile=False):
    """(loop, distributed dataset, model): our loop with SGD(0.1) on a model holding `initial`
    weights, over global batches of 32 at 32x32; `loop(iter(data), tf.constant(1))` takes the step."""
    with strategy.scope():
        model = train.build_train_model(cfg)
        model.set_weights(initial)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
    data = strategy.distribute_datasets_from_function(lambda ctx: pipeline.build_dataset(
        info, cfg.data, split="train", global_batch_size=32, image_size=(32, 32), training=True, input_context=ctx))
    return train.make_train_loop(strategy, model, optimizer, cfg, jit_compile=jit_compile), data, model
