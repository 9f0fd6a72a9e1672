-- Pause the rollout: the canary holds its weight, no steps, no promotion.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.paused = true
return obj
