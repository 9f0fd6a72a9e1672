-- Roll the canary back now. The value binds the request to the canary it
-- was meant for: the running canary's revision hash (the operator ignores, with an Event, a request
-- naming another revision, so a click that races a new rollout never acts on the next canary).
-- Without a canary in status, the time: a request the operator handles only while a canary runs.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local value = os.date("!%Y-%m-%dT%H:%M:%SZ")
if obj.status ~= nil and obj.status.canary ~= nil and obj.status.canary.hash ~= nil then
  value = obj.status.canary.hash
end
obj.metadata.annotations["modeldeploy.io/abort"] = value
return obj
