-- acme / customers: commercetools Customer -> Omnisend contact.
--
-- The contact is built in reading order: identity and consent (email, phone), names, birthdate,
-- location, tags, custom properties. Every value goes through `norm`, so `weft dry-run` lists
-- each value that was changed or refused. Rules:
--   * no usable email -> the record is rejected (Omnisend keys contacts on it);
--   * a phone that does not parse -> left out, the contact still goes (notes show why);
--   * an optional value that is missing or bad (birthdate, country, ...) -> left out.
-- ctx carries the flow's context from tenant.json: region (for local phone numbers) and
-- default_locale (for localized names); a caller or fixture may add ctx.locale.
local omni = require("omnisend")
local text = require("text")

local M = {}

-- One Omnisend contact per commercetools customer; an older version than the one last applied
-- is an out-of-order update, dropped by the pipeline.
M.key = function(rec) return rec.id end
M.version = function(rec) return rec.version, rec.lastModifiedAt end

-- The Omnisend contact is found by the customer id it was created for, else its email,
-- else its phone (a guest who registers keeps the contact made for their orders).
M.match = { "externalId", "email", "phone" }

-- Consent belongs to Omnisend once the contact exists: an unsubscribe made there is never
-- overwritten by a sync (commercetools sets it only for a new contact). Everything else
-- follows commercetools.
M.owners = { ["consent.email"] = "destination", ["consent.sms"] = "destination" }

local NONE = {}  -- stands in for a missing object, so lookups in it read as nil

-- The address the contact's phone and location come from: the customer's default shipping
-- address, else the first address; nil when there is none.
local function primary_address(rec)
  local addresses = rec.addresses
  if addresses == nil or #addresses == 0 then return nil end
  local wanted = rec.defaultShippingAddressId
  if wanted ~= nil then
    for _, address in ipairs(addresses) do
      if address.id == wanted then return address end
    end
  end
  return addresses[1]
end

function M.map(rec, ctx)
  -- Identity: the email is required.
  if rec.email == nil then
    reject("customer has no email", { field = "email", id = rec.id })
  end
  local email, why = norm.email(rec.email)
  if email == nil then
    reject("customer email is not valid: " .. tostring(why), { field = "email", id = rec.id })
  end

  -- Consent lives in the customer's custom fields; its date is when consent last changed,
  -- else when the customer last changed.
  local fields = (rec.custom and rec.custom.fields) or NONE
  local consent_date = norm.datetime(fields.consentUpdatedAt or rec.lastModifiedAt)

  local identifiers = {
    omni.identifier("email", email, omni.consent(fields.emailConsent), consent_date),
  }

  -- Phone: local numbers are read in the address's country, else the tenant's region.
  local address = primary_address(rec) or NONE
  local country = address.country and norm.country(address.country)
  local phone = address.phone and norm.phone(address.phone, country or ctx.region)
  if phone then
    identifiers[#identifiers + 1] =
      omni.identifier("phone", phone, omni.consent(fields.smsConsent), consent_date)
  end

  -- First name: the customer's own, else their preferred name in their locale
  -- (then its language, then the tenant's default locale).
  local first_name = text.clean(rec.firstName)
  if first_name == nil and fields.preferredName ~= nil then
    local wanted = rec.locale or ctx.locale or ctx.default_locale
    first_name = text.clean((norm.locale(fields.preferredName, wanted, { ctx.default_locale })))
  end

  local tags = omni.tags()
  omni.add_tag(tags, "source", "commercetools")
  for _, store in ipairs(rec.stores or NONE) do
    omni.add_tag(tags, "store", store.key)
  end
  omni.add_tag(tags, "locale", rec.locale)

  return {
    identifiers = identifiers,
    firstName = first_name,
    lastName = text.clean(rec.lastName),
    birthdate = rec.dateOfBirth and norm.date(rec.dateOfBirth),
    countryCode = country,
    city = text.clean(address.city),
    postalCode = text.clean(address.postalCode),
    address = text.join(" ", address.streetName, address.streetNumber),
    tags = tags,
    customProperties = {
      loyaltyTier = text.clean(fields.loyaltyTier),
      customerNumber = text.clean(rec.customerNumber),
      commercetoolsId = rec.id,
      commercetoolsVersion = rec.version,
    },
  }
end

return M
