"""Operating the service: `/health`, `/ready` and `/metrics` (`health`), the security headers
(`security`) and the `flask` commands for users and tokens (`cli`)."""
