"""``python -m scheduler_service`` is the ``task-scheduler`` command (see ``cli``)."""

from scheduler_service.cli import main

if __name__ == "__main__":
    main()
