"""Imports every detector module so their rules register; the registry decides what runs."""

import heuristics.database  # noqa: F401,E402
import heuristics.network  # noqa: F401,E402
import heuristics.caching  # noqa: F401,E402
import heuristics.gc  # noqa: F401,E402
import heuristics.cpu  # noqa: F401,E402
import heuristics.wait  # noqa: F401,E402
import heuristics.profiles  # noqa: F401,E402
