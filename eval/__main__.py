"""``python -m eval score COMPLETIONS.jsonl --task gsm8k|math|math500``."""

import click

from eval.cli import score_command


@click.group()
def main():
    """Standalone GSM8K / MATH grading."""


main.add_command(score_command)

if __name__ == "__main__":
    main()
