-- Argo CD health check for deltaroll.dev/ModelDelta.
-- Install under resource.customizations.health.deltaroll.dev_ModelDelta in argocd-cm.
--
-- Pending and Computing are Progressing (the worker Job runs), Ready is Healthy, Failed is
-- Degraded with the reason the operator wrote ("parent step-119 not found in s3://...").
local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the Deltaroll operator to report"
if obj.status == nil then
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if status.message ~= nil then
  hs.message = status.message
end
if status.phase == "Ready" then
  hs.status = "Healthy"
  if status.message == nil and status.versionId ~= nil then
    hs.message = "Version " .. status.versionId .. " published"
  end
elseif status.phase == "Failed" then
  hs.status = "Degraded"
end
return hs
