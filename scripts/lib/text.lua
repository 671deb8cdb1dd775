-- Small string helpers shared by flows: `local text = require("text")`.
-- They treat "missing", "not text" and "blank" alike, so a mapping can write
-- `firstName = text.clean(rec.firstName)` and let empty values vanish from the payload.
local text = {}

-- The trimmed string, or nil when the value is missing, blank, or not a string or number.
-- Numbers become their digits (a postal code stored as 12345 is still a postal code).
function text.clean(value)
  local kind = type(value)
  if kind == "number" then return tostring(value) end
  if kind ~= "string" then return nil end
  local s = norm.trim(value)
  if s == "" then return nil end
  return s
end

-- The cleaned parts that are present, joined with `sep`; nil when none is.
-- text.join(" ", "Main Street", "12") == "Main Street 12"; text.join(" ", nil, "12") == "12".
function text.join(sep, ...)
  local parts = {}
  for i = 1, select("#", ...) do
    local part = text.clean((select(i, ...)))
    if part then parts[#parts + 1] = part end
  end
  if #parts == 0 then return nil end
  return table.concat(parts, sep)
end

return text
