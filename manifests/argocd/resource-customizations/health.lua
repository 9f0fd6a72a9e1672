-- Argo CD health check for modeldeploy.io/ModelDeployment (Lua 5.1, as gopher-lua runs it).
-- Maps the operator's status.phase and conditions to Argo CD health:
--   Healthy                        -> Healthy
--   Pending, Progressing           -> Progressing (with the canary weight and step)
--   Paused (or spec.paused)        -> Suspended
--   Degraded, RolledBack, Failed   -> Degraded (with the reason, and the failing analysis)
-- A status not yet written for the current generation is Progressing, never Healthy.
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function fmt(v)
  if v == nil then
    return "no data"
  end
  return tostring(v)
end

-- The most recent failing analysis as "error-rate=0.2 > max 0.01 (Fail)".
local function failing_analysis(status)
  if status.lastAnalysis == nil then
    return nil
  end
  for _, a in ipairs(status.lastAnalysis) do
    if a.verdict == "Fail" or a.verdict == "Error" then
      local bound = ""
      if a.max ~= nil and a.value ~= nil and a.value > a.max then
        bound = " > max " .. fmt(a.max)
      elseif a.min ~= nil and a.value ~= nil and a.value < a.min then
        bound = " < min " .. fmt(a.min)
      end
      local text = a.metric .. "=" .. fmt(a.value) .. bound .. " (" .. a.verdict .. ")"
      if a.message ~= nil and a.message ~= "" then
        text = text .. ": " .. a.message
      end
      return text
    end
  end
  return nil
end

local function with_detail(message, detail)
  if detail == nil or detail == "" then
    return message
  end
  if message == nil or message == "" then
    return detail
  end
  return message .. "; " .. detail
end

local function canary_progress(status)
  local weight = status.canaryWeight or 0
  if status.canary ~= nil then
    local what = status.canary.bento or status.canary.image or "canary"
    return "canary " .. what .. " at " .. tostring(weight) .. "% (step " .. tostring(status.currentStep or 0) .. ")"
  end
  return nil
end

local status = obj.status
local spec = obj.spec or {}
local generation = obj.metadata and obj.metadata.generation

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modeldeploy operator to report status"
  return hs
end

if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local message = status.message or ""

if phase == "Paused" or (spec.paused == true and (phase == "Progressing" or phase == "Pending")) then
  hs.status = "Suspended"
  hs.message = with_detail("Rollout paused (spec.paused)", with_detail(canary_progress(status), message))
  return hs
end

if phase == "Healthy" then
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.status == "False" then
    hs.status = "Degraded"
    hs.message = with_detail("Not ready", ready.message)
    return hs
  end
  hs.status = "Healthy"
  if message ~= "" then
    hs.message = message
  elseif status.stable ~= nil then
    hs.message = "Serving " .. (status.stable.bento or status.stable.image or "the stable revision")
  else
    hs.message = "Healthy"
  end
  return hs
end

if phase == "Pending" or phase == "Progressing" then
  hs.status = "Progressing"
  local progressing = condition(status, "Progressing")
  local detail = message
  if detail == "" and progressing ~= nil then
    detail = progressing.message
  end
  hs.message = with_detail(canary_progress(status), detail)
  if hs.message == nil or hs.message == "" then
    hs.message = phase
  end
  return hs
end

if phase == "Degraded" or phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
  local detail = message
  if detail == "" then
    local degraded = condition(status, "Degraded")
    if degraded ~= nil then
      detail = degraded.message
    end
  end
  local prefix = phase
  if phase == "RolledBack" then
    prefix = "Canary rolled back"
  elseif phase == "Failed" then
    prefix = "Rollout failed"
  end
  hs.message = with_detail(with_detail(prefix, detail), failing_analysis(status))
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
