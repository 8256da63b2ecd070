"""Entry point of the Dataflow Flex Template: runs `python -m pipelines.preprocess` with the template's parameters."""

from pipelines import preprocess

if __name__ == "__main__":
    preprocess.main()
