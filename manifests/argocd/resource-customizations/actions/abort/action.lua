-- Abort the canary: traffic back to stable at once and the canary rolled back. The operator acts
-- on a new value of the modeldeploy.io/abort annotation, so each use writes the current time.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.io/abort"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
