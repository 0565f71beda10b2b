"""`python -m data_prep` and the `dlrm-prep` command."""

import sys

from data_prep.startup import prepare_process


def main() -> int:
    # Before pyarrow loads: its allocator reads its options when it starts.
    prepare_process()
    from data_prep.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
