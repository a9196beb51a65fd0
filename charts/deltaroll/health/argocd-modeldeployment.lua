-- Argo CD health check for deltaroll.dev/ModelDeployment.
-- Install under resource.customizations.health.deltaroll.dev_ModelDeployment in argocd-cm
-- (see charts/deltaroll/README.md, "GitOps health checks").
--
-- A status computed from an older generation is still Progressing: the operator has not seen
-- the new spec.version yet. Otherwise status.phase decides: Healthy -> Healthy, Paused ->
-- Suspended (waiting for `kubectl deltaroll promote`), Degraded -> Degraded (aborted or rolled
-- back; the message says why and what to do), anything else -> Progressing.
local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the Deltaroll operator to report"
if obj.status == nil then
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if status.message ~= nil then
  hs.message = status.message
end
if status.phase == "Healthy" then
  hs.status = "Healthy"
elseif status.phase == "Paused" then
  hs.status = "Suspended"
elseif status.phase == "Degraded" then
  hs.status = "Degraded"
elseif status.phase == nil and status.conditions ~= nil then
  -- An operator that wrote conditions only: kstatus' Stalled/Ready say the same.
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Stalled" and condition.status == "True" then
      hs.status = "Degraded"
      hs.message = condition.message or hs.message
    elseif condition.type == "Ready" and condition.status == "True" and hs.status ~= "Degraded" then
      hs.status = "Healthy"
    end
  end
end
return hs
