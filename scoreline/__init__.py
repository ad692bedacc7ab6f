"""scoreline's composition root: configuration and the ``scoreline`` command line.

The domain lives in the top-level packages: ``schemas`` (messages), ``routing`` (pure
routing decisions), ``workflows`` (model workflows) and ``streams`` (everything that
talks to Kafka). This package only wires them together.
"""
