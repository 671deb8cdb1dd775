-- Omnisend contact helpers shared by flows: `local omni = require("omnisend")`.
-- Omnisend keys a contact on its identifiers (an email and/or an E.164 phone), each with one
-- channel (email or sms) carrying a consent status; see the Omnisend section of the API notes.
local omni = {}

-- The three statuses Omnisend accepts.
omni.SUBSCRIBED = "subscribed"
omni.UNSUBSCRIBED = "unsubscribed"
omni.NON_SUBSCRIBED = "nonSubscribed"

-- Source consent values we understand (matched case-insensitively by norm.enum).
-- Anything else means we do not know, which Omnisend calls "nonSubscribed": never guess a yes.
local CONSENT = {
  subscribed = omni.SUBSCRIBED,
  opted_in = omni.SUBSCRIBED,
  unsubscribed = omni.UNSUBSCRIBED,
  nonsubscribed = omni.NON_SUBSCRIBED,
}

-- Omnisend consent status for a source value: "subscribed", "unsubscribed" or "nonSubscribed".
-- omni.consent("SUBSCRIBED") == "subscribed"; omni.consent("maybe") == "nonSubscribed";
-- omni.consent(nil) == "nonSubscribed".
function omni.consent(value)
  if type(value) ~= "string" then return omni.NON_SUBSCRIBED end
  return (norm.enum(norm.trim(value), CONSENT, omni.NON_SUBSCRIBED))
end

-- The channel each identifier type carries.
local CHANNEL = { email = "email", phone = "sms" }

-- One entry of a contact's `identifiers`:
--   omni.identifier("email", "anna@example.com", "subscribed", "2024-03-05T10:00:00Z")
--   -> { type = "email", id = "anna@example.com",
--        channels = { email = { status = "subscribed", statusDate = "2024-03-05T10:00:00Z" } } }
-- kind is "email" or "phone" (then the channel is "sms" and `id` must be E.164).
-- status_date may be nil: Omnisend then dates the status itself.
function omni.identifier(kind, id, status, status_date)
  local channel = CHANNEL[kind]
  if not channel then
    error("omnisend.identifier: kind must be \"email\" or \"phone\", got " .. tostring(kind), 2)
  end
  return {
    type = kind,
    id = id,
    channels = { [channel] = { status = status, statusDate = status_date } },
  }
end

-- A new tag list; it is written as [] even when nothing is added to it.
function omni.tags()
  local tags = {}
  json.array(tags)
  return tags
end

-- The tag "prefix:value" (or just "prefix" when value is omitted), or nil when value is given
-- but missing or blank.
function omni.tag(prefix, ...)
  if select("#", ...) == 0 then return prefix end
  local value = ...
  if type(value) == "number" then value = tostring(value) end
  if type(value) ~= "string" then return nil end
  value = norm.trim(value)
  if value == "" then return nil end
  return prefix .. ":" .. value
end

-- Appends omni.tag(prefix, value) to `tags` unless it is nil or already there; returns `tags`.
--   omni.add_tag(tags, "store", "eu-store")   -- "store:eu-store"
--   omni.add_tag(tags, "vip")                 -- "vip"
function omni.add_tag(tags, prefix, ...)
  local tag = omni.tag(prefix, ...)
  if tag == nil then return tags end
  for i = 1, #tags do
    if tags[i] == tag then return tags end
  end
  tags[#tags + 1] = tag
  return tags
end

return omni
