"""What every benchmark section stands on: the launcher of the processes the run starts and stops
(`launcher`, which the integration tests use too), what is read about those processes from /proc
(`procfs`), the load generators and their parsers (`load`), the stack under test and how its
servers and workers start (`stack`), the plans of each mode (`plans`), the machine line
(`machine`) and the report (`report`). The sections themselves live in `bench/sections/`."""
