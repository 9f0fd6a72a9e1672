-- Promote the canary now (skip the remaining steps): the operator acts on a new value of the
-- modeldeploy.io/promote annotation, so each use writes the current time.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.io/promote"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
