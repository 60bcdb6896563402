-- Argo CD health of a Ferry MigrationJob (ferry.dev/v1alpha1).
-- Uses only Lua 5.1's base and table libraries (Argo CD's default, no useOpenLibs).
-- The first checks (no status, an old generation, Stalled) are the same in both scripts: Argo CD
-- runs each script alone, with nothing shared.
local hs = {}
local st = obj.status
if st == nil or st.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ferry operator"
  return hs
end
-- A status older than the spec says nothing about the spec as it is now.
local generation = obj.metadata.generation
if generation ~= nil and (st.observedGeneration == nil or st.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ferry operator to act on generation " .. generation
  return hs
end
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type == "Stalled" and c.status == "True" then
      hs.status = "Degraded"
      hs.message = (c.reason or "Stalled") .. ": " .. (c.message or "")
      return hs
    end
  end
end
local p = st.progress or {}
local message = st.message or ""
local phase = st.phase
if phase == "Completed" then
  if st.deletes ~= nil and st.deletes.state == "Held" then
    hs.status = "Suspended"
    hs.message = "Copied; " .. (st.deletes.candidates or 0) .. " deletes held (maxDeletes allows " ..
      (st.deletes.allowed or 0) .. "): approve with the ferry.dev/approve-deletes annotation"
    return hs
  end
  hs.status = "Healthy"
  hs.message = message
elseif phase == "PartiallyCompleted" then
  hs.status = "Degraded"
  hs.message = (p.objectsFailed or 0) .. " of " .. (p.objectsTotal or 0) .. " objects failed, " ..
    (p.objectsCopied or 0) .. " copied; failure report: " .. (st.report or "none")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed: " .. message
elseif phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = "Cancelled (spec.cancel) at " .. (p.summary or "0/0") .. " objects"
elseif phase == "RolledBack" then
  hs.status = "Healthy"
  hs.message = "Rolled back: what the job wrote is taken back"
elseif phase == "PartiallyRolledBack" then
  hs.status = "Degraded"
  hs.message = "Rolled back but for some keys (changed since the copy, or not restorable); " ..
    "see the rollback's report"
elseif phase == "Paused" or obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Paused at " .. (p.summary or "0/0") .. " objects; resumes when spec.suspend is false"
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = (p.summary or "0/0") .. " objects"
  if p.percent ~= nil then
    hs.message = p.percent .. ", " .. hs.message
  end
  if p.eta ~= nil then
    hs.message = hs.message .. ", " .. (p.rate or "") .. ", ETA " .. p.eta
  end
else
  hs.status = "Progressing"
  hs.message = phase .. ": " .. message
end
return hs
