-- Argo CD health of a Ferry BucketSync (ferry.dev/v1alpha1): healthy while its runs succeed.
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
local run = st.lastRun
if st.phase == "Suspended" or obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended; no run starts until spec.suspend is false"
elseif st.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = st.message or "Failed"
elseif run ~= nil and (run.phase == "Failed" or run.phase == "PartiallyCompleted") then
  hs.status = "Degraded"
  hs.message = "Last run " .. (run.name or "") .. " " .. run.phase .. ": " ..
    (run.objectsFailed or 0) ..
    " objects failed, " .. (run.objectsCopied or 0) .. " copied"
elseif run ~= nil and run.deletesHeld == true then
  hs.status = "Suspended"
  hs.message = "Last run " .. (run.name or "") .. " holds its deletes (more than maxDeletes): " ..
    "approve with the ferry.dev/approve-deletes annotation"
elseif run == nil and st.phase == "Syncing" then
  hs.status = "Progressing"
  hs.message = "First run " .. (st.activeRun or "") .. " running"
elseif run == nil then
  hs.status = "Healthy"
  hs.message = "No run yet; the first at " .. (st.nextSyncTime or "the next tick")
elseif st.phase == "Syncing" then
  hs.status = "Healthy"
  hs.message = "Run " .. (st.activeRun or "") .. " running; the last, " .. (run.name or "") ..
    ", copied " .. (run.objectsCopied or 0) .. " objects"
else
  hs.status = "Healthy"
  hs.message = "Last run " .. (run.name or "") .. " copied " .. (run.objectsCopied or 0) ..
    " objects; next at " .. (st.nextSyncTime or "the next tick")
end
return hs
