import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no model hub is reachable: loading must never try the network
