"""The command: `blocktrace` (the installed script) and `python -m blocktrace`."""


def main() -> None:
    """The CLI's main, with the cyclic garbage collector set to run rarely before anything else is
    imported: a deep trace makes many small objects, and collecting after every 700 new ones cost a
    fifth of an 80-layer run; after 20,000 it costs next to nothing, and the garbage left meanwhile
    is a few MiB. Set before typer and the CLI are imported, it also saves `--help` a twelfth of its
    time (importing them collected many times over)."""
    import gc

    gc.set_threshold(20_000, 50, 1_000)
    from blocktrace.cli.app import main as command

    command()


if __name__ == "__main__":
    main()
