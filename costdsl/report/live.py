"""The live part of the HTML report (`report --live`): controls for batch, context, bitwidths,
hardware and stage, and a table that the page recomputes from the model's own expressions.

The data is `Model.live_data`'s: per hardware, stage and distinct roofline, each op's rows as
expression trees. The script walks a tree with a dozen operators (no `eval`, no generated code,
no library) and repeats evaluate.StageNumbers' arithmetic, so every number shown equals the
CLI's JSON for the same settings (to float rounding); the DOM carries them for tools:
`tr[data-op][data-time-s]` per op (one occurrence, seconds) and `[data-stage][data-total-time-s]`
for the stage. The settings live in the URL fragment (#batch=64&seq=4096&hw=...&stage=decode),
so a link reproduces a view.
"""
from __future__ import annotations

import html
import json

from .html import BOUND_COLOUR

_STYLE = """
#live{border:1px solid #ccc;background:#f6f8fa;padding:.6em 1em;margin:1em 0}
#live label{margin-right:1em;white-space:nowrap}#live input{width:6em}
#live-summary{font-size:.95em}.over{color:#b00}
"""

_SCRIPT = r"""
(function(){
var D=JSON.parse(document.getElementById('costdsl-live').textContent);
var COLOUR=JSON.parse(document.getElementById('costdsl-colours').textContent);
function num(x){return x==='inf'?Infinity:x;}
function esc(s){return String(s).replace(/[&<>"]/g,function(c){
  return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c];});}
function fl(s){return s==='inf'?Infinity:s==='-inf'?-Infinity:s==='nan'?NaN:Number(s);}
function ev(t,env){
  var op=t[0],i,v;
  switch(op){
  case 's':return env[t[1]];
  case 'q':var p=t[1].split('/');return p.length>1?Number(p[0])/Number(p[1]):Number(p[0]);
  case 'f':return fl(t[1]);
  case 'inf':return Infinity;
  case 'true':return true;
  case 'add':v=ev(t[1],env);for(i=2;i<t.length;i++)v+=ev(t[i],env);return v;
  case 'mul':v=ev(t[1],env);for(i=2;i<t.length;i++)v*=ev(t[i],env);return v;
  case 'max':v=ev(t[1],env);for(i=2;i<t.length;i++)v=Math.max(v,ev(t[i],env));return v;
  case 'min':v=ev(t[1],env);for(i=2;i<t.length;i++)v=Math.min(v,ev(t[i],env));return v;
  case 'and':for(i=1;i<t.length;i++)if(!ev(t[i],env))return false;return true;
  case 'or':for(i=1;i<t.length;i++)if(ev(t[i],env))return true;return false;
  case 'ceil':return Math.ceil(ev(t[1],env));
  case 'floor':return Math.floor(ev(t[1],env));
  case 'log':return Math.log(ev(t[1],env));
  case 'exp':return Math.exp(ev(t[1],env));
  case 'abs':return Math.abs(ev(t[1],env));
  case 'gt':return ev(t[1],env)>ev(t[2],env);
  case 'ge':return ev(t[1],env)>=ev(t[2],env);
  case 'lt':return ev(t[1],env)<ev(t[2],env);
  case 'le':return ev(t[1],env)<=ev(t[2],env);
  case 'pow':return Math.pow(ev(t[1],env),ev(t[2],env));
  case 'pw':for(i=1;i<t.length;i++)if(ev(t[i][1],env))return ev(t[i][0],env);return NaN;
  }
  throw new Error('unknown operator '+op);
}
/* evaluate.StageNumbers, line for line */
function stage(rec,env){
  var n=rec.names.length,k=rec.classes.length,r=rec.rows.map(function(t){return ev(t,env);});
  var ops=[],sum=0;
  for(var i=0;i<n;i++){
    var bytes=0;for(var c=0;c<k;c++)bytes+=r[(2+c)*n+i];
    var flops=r[n+i],vector=r[(2+k)*n+i],transfer=r[(3+k)*n+i],serial=r[(4+k)*n+i];
    var occupancy=r[(5+k)*n+i],waves=r[(6+k)*n+i],work=r[(7+k)*n+i];
    var matrix=(flops-vector)*waves;
    var compute=((matrix+vector)-vector)/num(rec.peak[i])+vector/num(rec.vector_peak[i]);
    var streaming=bytes/num(rec.bandwidth[i]),device=streaming*occupancy;
    if(rec.split_launch&&rec.split_launch[i]!=='inf')
      device=Math.min(device,rec.split_launch[i]+rec.split_ratio[i]*streaming);
    if(rec.floor&&rec.floor[i])device=Math.max(device,rec.floor[i]);
    var memory=device+transfer;
    var time=(rec.overlap[i]?Math.max(compute,memory):compute+memory)+num(rec.launch[i])+serial
      +work;
    var bound;
    if(compute>memory&&!serial)bound='compute';
    else if(rec.channels[i]&&transfer+serial>device)bound=rec.channels[i];
    else bound=compute>memory?'compute':'memory';
    ops.push({name:rec.names[i],kind:rec.kinds[i],repeat:r[i],time:time,bound:bound,
              flops:flops,bytes:bytes,peak:num(rec.peak[i]),bandwidth:num(rec.bandwidth[i]),
              typed:!!rec.compute_types[i]});
    sum+=r[i]*time;
  }
  var st=rec.schedule[0],mb=rec.schedule[1],sv=rec.server||[0,0];
  /* and the serving engine's time of the iteration: step + per sequence x batch */
  return {ops:ops,total:mb*sum*(1+(st-1)/mb)+sv[0]+(sv[1]?sv[1]*env.batch:0)};
}
/* the roofline chart: the hardware's ceilings and each op with arithmetic at its intensity */
var W=640,H=380,P=50;
function chart(hw,ops,total){
  var pts=ops.filter(function(o){return o.typed&&o.flops>0&&o.bytes>0;}).map(function(o){
    var x=o.flops/o.bytes;return {o:o,x:x,y:Math.min(o.peak,x*o.bandwidth)};});
  var byPeak={};   /* compute types of one peak share one roof and one label: "fp8, int8" */
  Object.keys(hw.peak).forEach(function(k){(byPeak[hw.peak[k]]=byPeak[hw.peak[k]]||[]).push(k);});
  var peaks=Object.keys(byPeak).map(function(v){return [byPeak[v].join(', '),Number(v)];});
  var xs=pts.map(function(p){return p.x;})
    .concat(peaks.map(function(p){return p[1]/hw.bandwidth;}));
  var ys=pts.map(function(p){return p.y;}).concat(peaks.map(function(p){return p[1];}));
  var lg=Math.log10,x0=lg(Math.min.apply(null,xs.concat([0.1]))/2);
  var x1=lg(Math.max.apply(null,xs)*4);
  var y0=lg(Math.min.apply(null,ys)/4),y1=lg(Math.max.apply(null,ys)*2);
  function px(v){return P+(lg(v)-x0)/(x1-x0)*(W-2*P);}
  function py(v){return H-P-(lg(v)-y0)/(y1-y0)*(H-2*P);}
  var s=['<rect x="'+P+'" y="'+P+'" width="'+(W-2*P)+'" height="'+(H-2*P)+
    '" fill="none" stroke="#ccc"/>'];
  peaks.forEach(function(p){
    var ridge=p[1]/hw.bandwidth,start=Math.max(Math.pow(10,x0),Math.pow(10,y0)/hw.bandwidth);
    s.push('<polyline fill="none" stroke="#555" points="'+px(start)+','+py(start*hw.bandwidth)+
      ' '+px(ridge)+','+py(p[1])+' '+px(Math.pow(10,x1))+','+py(p[1])+'"/>');
    s.push('<text x="'+(px(ridge)+4)+'" y="'+(py(p[1])-3)+'" font-size="9" fill="#555">'+
      esc(p[0])+' ridge '+ridge.toPrecision(4)+'</text>');
  });
  var top=pts.slice().sort(function(a,b){return b.o.repeat*b.o.time-a.o.repeat*a.o.time;})
    .slice(0,6).map(function(p){return p.o.name;});
  var labels={};   /* ops drawn at the same place share one label: "gate, up" */
  pts.forEach(function(p){
    s.push('<circle class="live-point" data-op="'+esc(p.o.name)+'" cx="'+px(p.x).toFixed(1)+
      '" cy="'+py(p.y).toFixed(1)+'" r="4" fill="'+(COLOUR[p.o.bound]||'#888')+'"><title>'+
      esc(p.o.name)+': '+p.x.toPrecision(3)+' ops/byte</title></circle>');
    if(top.indexOf(p.o.name)<0)return;
    var at=Math.round(px(p.x))+','+Math.round(py(p.y));
    (labels[at]=labels[at]||[]).push(p.o.name.split('.').pop());
  });
  Object.keys(labels).forEach(function(at){
    var xy=at.split(',');
    s.push('<text x="'+(Number(xy[0])+5)+'" y="'+(Number(xy[1])+13)+'" font-size="10">'+
      esc(labels[at].join(', '))+'</text>');
  });
  for(var d=Math.ceil(x0);d<=Math.floor(x1);d++)s.push('<text x="'+px(Math.pow(10,d))+'" y="'+
    (H-P+15)+'" font-size="10" text-anchor="middle">1e'+d+'</text>');
  for(d=Math.ceil(y0);d<=Math.floor(y1);d++)s.push('<text x="'+(P-5)+'" y="'+py(Math.pow(10,d))+
    '" font-size="10" text-anchor="end">1e'+d+'</text>');
  s.push('<text x="'+W/2+'" y="'+(H-10)+'" font-size="11" text-anchor="middle">intensity '+
    '(operations / byte)</text>');
  document.getElementById('live-roofline').innerHTML=s.join('');
}
/* where each op changes bound: its closed-form crossover at the other settings, on an axis */
function markers(cx,s,env){
  var box=document.getElementById('live-markers');
  if(!cx){box.innerHTML='';return;}
  if(cx.bits!==s.w_bits+'/'+s.a_bits+'/'+s.kv_bits){
    box.innerHTML='<p class="note">Crossover markers: solved at '+esc(cx.bits)+
      ' bits (weights/activations/KV); choose them to see where each op changes bound.</p>';
    return;}
  box.innerHTML=[['batch',Number(s.batch)],['seq',Number(s.seq)]].map(function(a){
    var pts=[];
    cx[a[0]].forEach(function(c){var v=ev(c.tree,env);
      if(isFinite(v)&&v>=1)pts.push({op:c.op,v:v,dir:c.direction});});
    return strip(a[0],pts,a[1]);
  }).join('');
}
function strip(name,pts,current){
  var lg=Math.log10,hi=Math.max(current*4,1024),W2=640,L=50;
  pts.forEach(function(p){hi=Math.max(hi,p.v*2);});
  function px(v){return L+lg(v)/lg(hi)*(W2-2*L);}
  var s=['<line x1="'+L+'" y1="40" x2="'+(W2-L)+'" y2="40" stroke="#999"/>'];
  for(var d=0;d<=Math.floor(lg(hi));d++)s.push('<text x="'+px(Math.pow(10,d))+
    '" y="55" font-size="9" text-anchor="middle">1e'+d+'</text>');
  var groups={};
  pts.forEach(function(p){
    s.push('<g class="crossover" data-axis="'+name+'" data-op="'+esc(p.op)+'" data-value="'+
      p.v+'"><line x1="'+px(p.v)+'" y1="30" x2="'+px(p.v)+'" y2="40" stroke="'+
      (p.dir==='memory->compute'?COLOUR.compute:COLOUR.memory)+'"/><title>'+esc(p.op)+
      ': '+p.dir+' at '+name+' '+p.v.toPrecision(4)+'</title></g>');
    var at=Math.round(px(p.v)/30);
    (groups[at]=groups[at]||{x:px(p.v),n:[]}).n.push(p.op.split('.').pop());
  });
  Object.keys(groups).forEach(function(k,i){var g=groups[k];
    s.push('<text x="'+g.x+'" y="'+(i%2?14:25)+'" font-size="9" text-anchor="middle">'+
      esc(g.n.slice(0,3).join(', ')+(g.n.length>3?', ...':''))+'</text>');});
  s.push('<path d="M'+px(current)+',40 l-5,9 l10,0 z" fill="#222"><title>'+name+' '+current+
    '</title></path>');
  return '<div><b>'+name+'</b>: where each op changes bound (the triangle: this view)<br>'+
    '<svg class="axis" width="'+W2+'" height="60" xmlns="http://www.w3.org/2000/svg">'+
    s.join('')+'</svg></div>';
}
function secs(s){
  if(!isFinite(s))return String(s);
  var a=Math.abs(s),u=a>=1?[1,'s']:a>=1e-3?[1e3,'ms']:a>=1e-6?[1e6,'us']:[1e9,'ns'];
  return (s*u[0]).toPrecision(3).replace(/\.?0+$/,'')+' '+u[1];
}
function bytes(b){
  var u=[[1e12,'TB'],[1e9,'GB'],[1e6,'MB'],[1e3,'kB']];
  for(var i=0;i<u.length;i++)if(b>=u[i][0])return (b/u[i][0]).toPrecision(3)+' '+u[i][1];
  return b.toFixed(0)+' B';
}
var ids=['batch','seq','tokens','w_bits','a_bits','kv_bits','config','hw','stage','vs'];
function read(){var s={};ids.forEach(function(k){s[k]=document.getElementById('c-'+k).value;});
  return s;}
function fromHash(){
  var h=location.hash.replace(/^#/,'');if(!h)return;
  h.split('&').forEach(function(p){
    var kv=p.split('='),el=document.getElementById('c-'+kv[0]);
    if(el&&kv.length===2)el.value=decodeURIComponent(kv[1]);
  });
}
function toHash(s){
  var h='#'+ids.map(function(k){return k+'='+encodeURIComponent(s[k]);}).join('&');
  if(location.hash!==h)history.replaceState(null,'',h);
}
/* one configuration (model or passes) on one hardware at the controls' settings */
function compute(config,hwKey,stageName,s){
  var cfg=D.configs[Number(config)]||D.configs[0];
  var hw=cfg.hardware.filter(function(h){return h.key===hwKey;})[0]||cfg.hardware[0];
  var entry=hw.stages[stageName];
  if(!entry)return null;
  var pick=entry.pick[s.w_bits+'/'+s.a_bits+'/'+s.kv_bits];
  var batch=Number(s.batch),seq=Number(s.seq),tokens=Number(s.tokens);
  if(pick===undefined||!(batch>=1)||!(seq>=1)||!(tokens>=1))return null;
  var env={batch:batch,seq:seq,w_bits:Number(s.w_bits),a_bits:Number(s.a_bits),
           kv_bits:Number(s.kv_bits),tokens:tokens};
  return {cfg:cfg,hw:hw,entry:entry,env:env,res:stage(entry.variants[pick],env)};
}
function compare(s){
  var box=document.getElementById('live-compare');
  if(!s.vs){box.innerHTML='';return;}
  var vs=s.vs.split(':'),rows=['<tr><th>stage</th><th>this view</th><th>compared</th>'+
    '<th>speedup of the compared</th></tr>'],changed=[];
  Object.keys(D.configs[0].hardware[0].stages).forEach(function(st){
    if(st==='step'&&s.stage!=='step')return;   /* the step only when it is the view */
    var a=compute(s.config,s.hw,st,s),b=compute(vs[0],vs[1],st,s);
    if(!a||!b)return;
    rows.push('<tr data-compare-stage="'+st+'" data-a-time-s="'+a.res.total+'" data-b-time-s="'+
      b.res.total+'" data-speedup="'+(a.res.total/b.res.total)+'"><td>'+st+'</td><td>'+
      secs(a.res.total)+'</td><td>'+secs(b.res.total)+'</td><td>'+
      (a.res.total/b.res.total).toFixed(3)+'x</td></tr>');
    if(st!==s.stage)return;
    var other={};b.res.ops.forEach(function(o){other[o.name]=o;});
    a.res.ops.forEach(function(o){
      var q=other[o.name];
      if(q&&q.bound!==o.bound)changed.push('<li data-op="'+esc(o.name)+'" data-bound-a="'+
        o.bound+'" data-bound-b="'+q.bound+'">'+esc(o.name)+': '+o.bound+' &rarr; '+q.bound+
        '</li>');
    });
  });
  var other=D.configs[Number(vs[0])]||D.configs[0];
  box.innerHTML='<h3>Compared with '+esc(other.label)+' on '+esc(vs[1])+'</h3><table>'+
    rows.join('')+'</table><p>Ops of the '+esc(s.stage)+' stage that change bound: '+
    (changed.length?'</p><ul>'+changed.join('')+'</ul>':'none.</p>');
}
function update(){
  var s=read(),out=document.getElementById('live-ops'),total=document.getElementById('live-total');
  var got=compute(s.config,s.hw,s.stage,s);
  if(!got){total.textContent='settings out of range';return;}
  var hw=got.hw,entry=got.entry,env=got.env,res=got.res;
  var rows=['<tr><th>op</th><th>kind</th><th>×</th><th>bound</th><th>time</th>'+
    '<th>share</th></tr>'];
  res.ops.forEach(function(o){
    rows.push('<tr data-op="'+esc(o.name)+'" data-time-s="'+o.time+'" data-bound="'+o.bound+
      '"><td>'+esc(o.name)+'</td><td>'+esc(o.kind)+'</td><td>'+o.repeat+'</td><td style="color:'+
      (COLOUR[o.bound]||'#888')+'">'+o.bound+'</td><td>'+secs(o.time)+'</td><td>'+
      (100*o.repeat*o.time/res.total).toFixed(1)+'%</td></tr>');
    document.querySelectorAll('.node[data-stage="'+s.stage+'"]').forEach(function(g){
      if(g.getAttribute('data-op')===o.name)
        g.querySelector('rect').setAttribute('fill',COLOUR[o.bound]||'#888');});
  });
  out.innerHTML=rows.join('');
  chart(hw,res.ops,res.total);
  markers(entry.crossovers,s,env);
  total.setAttribute('data-stage',s.stage);
  total.setAttribute('data-total-time-s',String(res.total));
  var mem=entry.memory.map(function(t){return ev(t,env);});
  var used=mem[0]+mem[1]+mem[2],fits=used<=hw.capacity;
  total.innerHTML=esc(got.cfg.label)+', '+esc(s.stage)+' on '+esc(hw.name)+': <b>'+
    secs(res.total)+'</b>; memory '+
    bytes(used)+' (weights '+bytes(mem[0])+', KV '+bytes(mem[1])+', activations '+
    bytes(mem[2])+') of '+bytes(hw.capacity)+': <span class="'+(fits?'':'over')+'">'+
    (fits?'fits':'does not fit')+'</span>';
  compare(s);
  toHash(s);
}
fromHash();
ids.forEach(function(k){document.getElementById('c-'+k).addEventListener('change',update);
  document.getElementById('c-'+k).addEventListener('input',update);});
window.addEventListener('hashchange',function(){fromHash();update();});
update();
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _json(data) -> str:
    """JSON inside a <script> element: `</` cannot end it early."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _select(name: str, options: list[tuple[str, str]], chosen: str) -> str:
    items = "".join(f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(t)}'
                    f"</option>" for v, t in options)
    return f'<select id="c-{name}">{items}</select>'


def section(data: dict, initial: dict) -> str:
    """The controls, the live table, the compare view and the embedded data ({"bits",
    "configs": [Model.live_data with a "label"]}: the model, and what it is compared with);
    `initial`: batch, seq, bitwidths, hardware key and stage the page opens at, unless its URL
    says otherwise."""
    bits = [(f"{b:g}", f"{b:g}") for b in data["bits"]]
    configs = data["configs"]
    hardware = configs[0]["hardware"]
    stages = list(hardware[0]["stages"])
    labels = [(str(i), c["label"]) for i, c in enumerate(configs)]
    chips = [(h["key"], h["name"]) for h in hardware]
    versus = [("", "nothing")] + [(f"{i}:{h['key']}", f"{c['label']} on {h['name']}")
                                  for i, c in enumerate(configs) for h in hardware]
    controls = "".join([
        f'<label>batch <input id="c-batch" type="number" min="1" step="1" '
        f'value="{initial["batch"]}"></label>',
        f'<label>seq <input id="c-seq" type="number" min="1" step="1" '
        f'value="{initial["seq"]}"></label>',
        '<label title="the step stage: new tokens per sequence over seq cached">tokens '
        '<input id="c-tokens" type="number" min="1" step="1" value="16"></label>',
        *(f"<label>{n.split('_')[0]} bits {_select(n, bits, f'{initial[n]:g}')}</label>"
          for n in ("w_bits", "a_bits", "kv_bits")),
        f"<label>model {_select('config', labels, '0')}</label>",
        f"<label>hardware {_select('hw', chips, initial['hw'])}</label>",
        f"<label>stage {_select('stage', [(s, s) for s in stages], initial['stage'])}</label>",
        f"<label>compare with {_select('vs', versus, '')}</label>"])
    return (f"<style>{_STYLE}</style>"
            '<h2 id="live-view">Live: any setting, computed in this page</h2>'
            f'<form id="live" onsubmit="return false">{controls}</form>'
            '<p id="live-summary"><span id="live-total"></span></p>'
            '<div id="live-markers"></div>'
            f'<svg id="live-roofline" width="640" height="380" '
            'xmlns="http://www.w3.org/2000/svg"></svg>'
            '<div id="live-compare"></div>'
            '<table class="ops" id="live-ops"></table>'
            f'<script type="application/json" id="costdsl-live">{_json(data)}</script>'
            f'<script type="application/json" id="costdsl-colours">{_json(BOUND_COLOUR)}'
            f"</script>")


def script() -> str:
    return f"<script>{_SCRIPT}</script>"
