#!/usr/bin/env python3
"""Points a copy of the example workspace at the fakes that build/weft-fakes started.

Usage: point_at_fakes.py FAKES_JSON TENANT_JSON
Rewrites TENANT_JSON (acme's) in place: the commercetools connection and the Omnisend
connection go to the fakes' URLs, Omnisend's rate limit is turned off. Then prints the
environment the secrets need, as shell assignments (ACME_CT_CLIENT_SECRET=...), so a
caller can `env $(point_at_fakes.py ...) weft sync ...`. Used by bench/sync_bench.sh and
by `./dev up`'s sync demo."""
import json
import sys

fakes = json.load(open(sys.argv[1]))
path = sys.argv[2]
tenant = json.load(open(path))
ct = tenant["connections"]["ct"]
ct["auth_url"] = ct["api_url"] = fakes["commercetools"]["url"]
ct["project"] = fakes["commercetools"]["project"]
ct["client_id"] = fakes["commercetools"]["client_id"]
om = tenant["connections"]["omnisend"]
om["api_url"] = fakes["omnisend"]["url"]
om["rate_limit"] = "off"
with open(path, "w") as out:
    json.dump(tenant, out, indent=2)
print(f"ACME_CT_CLIENT_SECRET={fakes['commercetools']['client_secret']} "
      f"ACME_OMNISEND_API_KEY={fakes['omnisend']['api_key']}")
