"""`python -m data_prep` and the `dlrm-prep` command."""

import sys

from data_prep.allocator import keep_freed_memory


def main() -> int:
    # Before pyarrow loads: its allocator reads its options when it starts.
    keep_freed_memory()
    from data_prep.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
