-- acme / customers_reference: the benchmark twin of ../../../shared/bench/reference_map.js.
--
-- For every record gen_customers.py writes, this produces the same JSON object as the Node.js
-- reference (key order aside): bench/map_bench.sh checks it line by line. It copies the
-- reference's semantics on purpose, quirks included (raw dates, phones stripped rather than
-- parsed, first store only): it is a speed yardstick, not an example to copy; see customers.lua.
--
-- How the JavaScript reads, and how that is reproduced here:
--   * `x ?? y`, `o?.[k]`: null and undefined both fall through; in weft both read as nil,
--     so these are explicit `== nil` tests (`or` would also skip a `false`).
--   * Top-level fields that are null/undefined are deleted: nil fields vanish from the output.
--   * Inside nested objects JSON.stringify drops undefined but writes null: a field present as
--     null in the input (loyaltyTier is null in a quarter of the records) becomes json.null.
--   * `'locale:' + r.locale` is JavaScript string conversion: a missing locale is "undefined".
-- Not defined on purpose: M.key / M.version, so `weft map` drops nothing, not even the repeated
-- records of the 5x memory-check input.
local M = {}

local has, null = json.has, json.null
local trim, lower = norm.trim, norm.lower
local gsub, ascii_lower = string.gsub, string.lower

local EMPTY = {}

-- consent() of the reference: (s || '').toLowerCase(), then subscribed / opted_in /
-- unsubscribed, anything else nonSubscribed. ASCII lowercasing decides the same: the only
-- non-ASCII character whose lowercase is ASCII is the Kelvin sign (-> "k"), in none of the words.
local STATUS = { subscribed = "subscribed", opted_in = "subscribed", unsubscribed = "unsubscribed" }
local function consent(s)
  if type(s) ~= "string" then return "nonSubscribed" end  -- null, undefined, false, '' and friends
  return STATUS[ascii_lower(s)] or "nonSubscribed"
end

-- The field as JavaScript's String() prints it (for `'prefix:' + value`), when it is not a string.
local function js_string(obj, k)
  local v = obj[k]
  if v == nil then return has(obj, k) and "null" or "undefined" end
  local kind = type(v)
  if kind == "boolean" then return tostring(v) end
  if kind == "number" and v == math.floor(v) and math.abs(v) < 2^53 then
    return string.format("%d", v)
  end
  reject("customers_reference: no exact JavaScript String() for this value", { field = k })
end

-- The field as JSON.stringify writes it inside an object: nil if absent, null if present-null.
local function nested(obj, k)
  local v = obj[k]
  if v == nil and has(obj, k) then return null end
  return v
end

function M.map(r, ctx)
  local f = r.custom.fields                 -- r.custom.fields (the reference throws without it)
  local a = r.addresses[1]                  -- r.addresses[0] || {}
  if a == nil or a == false or a == "" or a == 0 then a = EMPTY end

  local email = r.email                     -- r.email.trim().toLowerCase()
  if type(email) ~= "string" then
    reject("customers_reference: email is not a string (the reference would throw)", { field = "email" })
  end

  local date = f.consentUpdatedAt           -- statusDate: f.consentUpdatedAt
  if date == nil and has(f, "consentUpdatedAt") then date = null end

  local ids = { { type = "email", id = lower(trim(email)),
                  channels = { email = { status = consent(f.emailConsent), statusDate = date } } } }
  local phone = a.phone                     -- if (a.phone): a non-empty string
  if type(phone) == "string" and phone ~= "" then
    ids[2] = { type = "phone", id = (gsub(phone, "[^0-9+]", "")),
               channels = { sms = { status = consent(f.smsConsent), statusDate = date } } }
  end

  local locale = r.locale
  if type(locale) ~= "string" then locale = js_string(r, "locale") end

  -- r.firstName ?? f.preferredName?.[r.locale] ?? f.preferredName?.['en-US']
  local first = r.firstName
  if first == nil then
    local pn = f.preferredName
    local kind = type(pn)
    if kind == "table" or kind == "userdata" then
      first = pn[locale]
      if first == nil then first = pn["en-US"] end
    end
  end

  local store = r.stores[1].key             -- 'store:' + r.stores[0].key
  if type(store) ~= "string" then store = js_string(r.stores[1], "key") end

  return {
    identifiers = ids,
    firstName = first,
    lastName = r.lastName,
    birthdate = r.dateOfBirth,
    country = a.country,
    city = a.city,
    postalCode = a.postalCode,
    tags = { "source:commercetools", "store:" .. store, "locale:" .. locale },
    customProperties = {
      loyaltyTier = nested(f, "loyaltyTier"),
      customerNumber = nested(r, "customerNumber"),
      commercetoolsId = nested(r, "id"),
      version = nested(r, "version"),
    },
  }
end

return M
