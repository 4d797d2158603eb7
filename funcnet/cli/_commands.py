"""The table of ``funcnet`` commands, read by the top parser and by each command's own."""

# The commands: name -> (the module that owns its flags, ``add_parser``, and its work,
# ``run``; what it does, for --help).  A new command is a module and one entry here.
COMMANDS = {
    "check": ("check", "check every built-in layer, loss and node against jax.vjp"),
    "demo": ("demo", "gradient descent on x1² + x2² with terminal plots"),
    "train": (
        "train",
        "train a model on a task: MNIST digits (mlp, convnets), tiny Shakespeare (a character GPT)",
    ),
    "sample": ("sample", "text from a character GPT that funcnet train saved"),
    "eval": ("evaluate", "saved models on the MNIST test set; several: their ensemble"),
    "profile": ("profile", "where a step's time goes: forward and backward time per layer"),
}
