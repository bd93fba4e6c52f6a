{
  inputs.nixpkgs.url = "github:x/y";
  inputs.sp-module-a.url = "u";
  outputs = _: { };
}
