-- Argo CD actions offered on a ModelDeployment (Lua 5.1). Each is enabled only when it makes sense:
--   pause   while not paused          resume   while paused (spec.paused)
--   promote while a canary runs       abort    while a canary runs
local actions = {}
local spec = obj.spec or {}
local status = obj.status or {}
local paused = spec.paused == true
local phase = status.phase or "Pending"
local canary = status.canary ~= nil or phase == "Progressing"

actions["pause"] = {["disabled"] = paused, ["iconClass"] = "fa fa-fw fa-pause-circle"}
actions["resume"] = {["disabled"] = not paused, ["iconClass"] = "fa fa-fw fa-play-circle"}
actions["promote"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-forward"}
actions["abort"] = {["disabled"] = not canary, ["iconClass"] = "fa fa-fw fa-times-circle"}
return actions
