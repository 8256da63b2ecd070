"""The optimizer the options ask for: Adam, its learning-rate schedule, clipping and loss scaling."""


def make_optimizer(args):
    """Adam (Kingma and Ba, 2015) as the options ask: schedule, beta_2, clipping, loss scaling.

    Args:
      args: `options.parse_args`'s namespace.

    Returns:
      keras.optimizers.Adam, in a keras.optimizers.LossScaleOptimizer with --mixed_precision.
    """
    import keras

    optimizer = keras.optimizers.Adam(
        learning_rate_schedule(args.lr_schedule, args.learning_rate, args.warmup_steps, args.steps),
        beta_2=args.adam_beta2,
        global_clipnorm=args.clip_norm or None,
    )
    return keras.optimizers.LossScaleOptimizer(optimizer) if args.mixed_precision else optimizer


def learning_rate_schedule(name, peak, warmup_steps, total_steps):
    """Linear warm-up from 0 to `peak` over warmup_steps, then constant or a cosine decay to 0 at total_steps.

    Keras' CosineDecay with warm-up (I. Loshchilov and F. Hutter, "SGDR", ICLR 2017; warm-up as in
    P. Goyal et al., "Accurate, Large Minibatch SGD", 2017, section 2.2).

    Returns:
      a keras LearningRateSchedule, or the float `peak` for a constant rate without warm-up.
    """
    import keras

    if warmup_steps <= 0 and name == "constant":
        return peak
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=1.0 if name == "constant" else 0.0,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
