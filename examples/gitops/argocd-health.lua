hs = {status = "Progressing", message = "waiting for the operator"}
if obj.status == nil then return hs end
local gen = obj.metadata.generation
if gen ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < gen) then
  hs.message = "the operator has not seen generation " .. gen .. " yet"
  return hs
end
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Ready" then
    if c.status == "True" then
      return {status = "Healthy", message = c.message or "Ready"}
    elseif c.status == "False" then
      return {status = "Degraded", message = (c.reason or "NotReady") .. ": " .. (c.message or "")}
    end
  end
end
return hs
